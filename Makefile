# omnic: the two entry points a newcomer needs (see README.md).
#   make demo  - install what is missing, build, compile the bundled model and run it
#   make test  - install what is missing, run every test
.PHONY: setup build demo test

CARGO ?= cargo
BIN := target/debug

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --bin omnic
	$(CARGO) build -p omnic-runtime --bin omnirt

# The bundled DiT (a tiny diffusers DiTTransformer2DModel with reference
# outputs computed by diffusers): compiled to native code by omnic, run by
# omnirt, compared with diffusers' output.
demo: build
	@mkdir -p out
	$(BIN)/omnic inspect tests/fixtures/dit --dims batch=2
	$(BIN)/omnic compile tests/fixtures/dit -o out/dit.omni
	$(BIN)/omnirt run out/dit.omni --inputs tests/fixtures/dit/io.safetensors --outputs out/dit-output.safetensors
	$(BIN)/omnirt compare out/dit-output.safetensors tests/fixtures/dit/io.safetensors --prefix output. --atol 1e-4
	@echo "demo: outputs in out/dit-output.safetensors; artifact in out/dit.omni (omnirt inspect out/dit.omni)"

test: setup
	$(CARGO) test --workspace
