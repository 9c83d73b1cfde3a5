# `make demo`: set up and run the main job on a built-in example. `make test`: set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := out

.PHONY: setup graphviz demo test test-slow bench docs

setup: $(VENV)/.installed graphviz

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,ethos-u]'
	touch $@

# Pictures need graphviz's `dot`; without it fxrewrite writes the DOT text and says so.
graphviz:
	@command -v dot >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q graphviz >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q graphviz >/dev/null; } \
	      || echo "could not install graphviz; pictures will be written as .dot text"; \
	  else echo "graphviz's dot is missing: run 'sudo apt-get install -y graphviz' (pictures fall back to .dot text)"; fi; }

demo: setup
	$(BIN)/fxrewrite lower torchvision.models:resnet18 --target npu-generic -o $(OUT)/resnet18-npu-generic.pt2 \
	  --report $(OUT)/resnet18-npu-generic.json
	$(BIN)/fxrewrite viz fxrewrite.examples:tiny_convnext --input-shape 1,1,28,28 --target archnet \
	  -o $(OUT)/tiny_convnext-archnet.svg
	$(BIN)/fxrewrite lower fxrewrite.examples:digits_convnext --input-shape 1,1,28,28 --target archnet \
	  --calib fxrewrite.examples:digits_inputs --calib-size 1797 --epochs 10 --finetune-epochs 5 \
	  --wbits 4 --abits 4 -o $(OUT)/digits_convnext-archnet.pt2 --report $(OUT)/digits_convnext-archnet.json
	$(BIN)/fxrewrite export $(OUT)/digits_convnext-archnet.pt2 -o $(OUT)/digits_convnext-archnet.onnx

test: setup
	$(BIN)/python -m pytest -q

# Full-size torchvision and transformers models: minutes, so not in CI's default run.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# The generated pages under docs/ (pass list, each target's ops); tests/test_docs.py checks they are current.
docs: setup
	$(BIN)/python -m fxrewrite.docs docs
