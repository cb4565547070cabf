# omnic: the two entry points a newcomer needs (see README.md).
#   make demo  - install what is missing, build, compile the bundled model and draw digits
#   make test  - install what is missing, run every test
.PHONY: setup build demo test

CARGO ?= cargo
BIN := target/debug

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --bin omnic
	$(CARGO) build -p omnic-runtime --bin omnirt

# First the bundled digits model (models/zoo/digits-dit) compiled by omnic
# and sampled by omnirt into a PNG of the digits 0-9; then the bundled DiT
# (a tiny diffusers DiTTransformer2DModel with reference outputs computed by
# diffusers): compiled to native code by omnic, run by omnirt, compared with
# diffusers' output (parity).
demo: build
	@mkdir -p out
	$(BIN)/omnic compile models/zoo/digits-dit -o out/digits.omni
	$(BIN)/omnirt generate out/digits.omni --class 0,1,2,3,4,5,6,7,8,9 --steps 20 --guidance 4 --seed 0 -o out/digits.png
	@echo "demo: digits 0-9 drawn by the compiled model in out/digits.png"
	$(BIN)/omnic inspect tests/fixtures/dit --dims batch=2
	$(BIN)/omnic compile tests/fixtures/dit -o out/dit.omni
	$(BIN)/omnirt run out/dit.omni --inputs tests/fixtures/dit/io.safetensors --outputs out/dit-output.safetensors
	$(BIN)/omnirt compare out/dit-output.safetensors tests/fixtures/dit/io.safetensors --prefix output. --atol 1e-4
	@echo "demo: parity check passed (out/dit-output.safetensors); the picture is out/digits.png"

test: setup
	$(CARGO) test --workspace
