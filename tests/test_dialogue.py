import asyncio

from stickerconv.agent4sc.dialogue import DialogueMemory, estimate_tokens
from stickerconv.llm import ChatModel

from helpers.llm_fakes import ScriptedBackend


def _memory(limit, replies=("B is stressed about exams; A comforts B.",)):
    backend = ScriptedBackend(replies=list(replies), default="B and A keep talking about the exam.")
    return DialogueMemory(ChatModel(backend), token_limit=limit), backend


def test_no_fold_under_the_limit_and_render_is_the_lines():
    memory, backend = _memory(2000)
    asyncio.run(memory.add("B: I failed my exam.", "A: I'm sorry, that hurts."))
    assert memory.render() == "B: I failed my exam.\nA: I'm sorry, that hurts."
    assert memory.render(["B: Thanks."]).endswith("\nB: Thanks.")
    assert (memory.folds, backend.requests) == (0, [])


def test_oldest_lines_fold_into_the_summary_when_over_the_limit():
    memory, backend = _memory(40)  # about 160 characters
    lines = [f"{'B' if i % 2 == 0 else 'A'}: line {i} " + "word " * 8 for i in range(6)]

    async def run():
        for i in range(0, 6, 2):
            await memory.add(lines[i], lines[i + 1])

    asyncio.run(run())
    assert memory.folds == len(backend.requests) >= 1
    expected = (
        "B is stressed about exams; A comforts B." if memory.folds == 1 else "B and A keep talking about the exam."
    )
    assert memory.summary == expected
    folded_prompt = backend.requests[0].messages[-1].text
    assert "line 0" in folded_prompt and "Current summary:\n(none)" in folded_prompt
    assert memory.lines[-1] == lines[-1]  # the newest line stays verbatim
    assert "line 0" not in "\n".join(memory.lines)  # the oldest left the buffer ...
    assert memory.render().startswith(f"Summary of the earlier conversation: {expected}")  # ... for the summary
    assert memory.tokens() <= 40


def test_a_second_fold_extends_the_previous_summary():
    memory, backend = _memory(20, replies=("first summary.", "second summary."))

    async def run():
        for i in range(6):
            await memory.add(f"B: message number {i} is rather long " * 2)

    asyncio.run(run())
    assert memory.folds >= 2
    assert "Current summary:\nfirst summary." in backend.requests[1].messages[-1].text
    assert len(memory.lines) >= 1


def test_token_estimate():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
