"""The LLM layer: one ChatModel interface for every LLM call, over pluggable backends."""

from stickerconv.llm.chat import ChatModel
from stickerconv.llm.config import LLMConfig, LLMFactory, parse_llm_spec
from stickerconv.llm.store import Price
from stickerconv.llm.types import (
    ChatResult,
    ConfigError,
    ImagePart,
    LLMError,
    Message,
    PermanentError,
    ReplayMissError,
    RetryBudgetExhausted,
    Settings,
    StructuredOutputError,
    TransientError,
    assistant,
    system,
    user,
)

__all__ = [
    "ChatModel",
    "ChatResult",
    "ConfigError",
    "ImagePart",
    "LLMConfig",
    "LLMError",
    "LLMFactory",
    "Message",
    "PermanentError",
    "Price",
    "ReplayMissError",
    "RetryBudgetExhausted",
    "Settings",
    "StructuredOutputError",
    "TransientError",
    "assistant",
    "parse_llm_spec",
    "system",
    "user",
]
