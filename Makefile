# omnic: the two entry points a newcomer needs (see README.md).
#   make demo  - install what is missing, build, run the bundled model
#   make test  - install what is missing, run every test
.PHONY: setup build demo test

CARGO ?= cargo

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace

# The bundled DiT (a tiny diffusers DiTTransformer2DModel with reference
# outputs computed by diffusers) imported and run on the reference evaluator.
demo: setup
	$(CARGO) run -q --bin omnic -- inspect tests/fixtures/dit --dims batch=2
	$(CARGO) run -q --bin omnic -- run tests/fixtures/dit --inputs tests/fixtures/dit/io.safetensors --outputs out/dit-output.safetensors

test: setup
	$(CARGO) test --workspace
