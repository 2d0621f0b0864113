# Two environments:
#   .venv      Python 3.11, the pinned set beside tensorflow-compression 2.14.1 (requirements/py311-tf.txt)
#   .venv-new  Python 3.11, the newest JAX/Flax/optax/orbax with numpy 2 and no TensorFlow
#              (requirements/py311-new.txt); the model, training, checkpoint and coding tests run
#              here too, and files written in each environment are decoded in the other
#              (tests/test_cross_env.py, run from .venv with MRACNN_OTHER_PYTHON).
PYTHON ?= python3.11
VENV := .venv
VENV_NEW := .venv-new
PYTEST_ARGS ?=
# The bfloat16 loss-curve test (3-4 minutes) runs once, in .venv-new (the stack of the GPU
# machines, where bfloat16 matters); the .venv half leaves it out.
BF16_CURVE = tests/test_bf16.py::test_bf16_training_follows_the_float32_loss_curve
# Latent refinement (pure JAX, about a minute) runs in .venv-new only, for the same reason.
REFINE_TESTS = tests/test_latent_refinement.py
# test_model's 25 training steps run in .venv only: in .venv-new the bfloat16 curve's float32 run
# checks the same step (the loss falls, every parameter moves) over more steps.
MODEL_STEP = tests/test_model.py::test_training_step_lowers_loss_and_reaches_every_parameter
# The built wheel in a fresh venv (about 2 minutes) is tried on the stack users install it on,
# the newest JAX with numpy 2 (it needs setuptools >= 77 there, requirements/py311-new.txt).
WHEEL_TESTS = tests/test_wheel.py
NEW_ENV_TESTS ?= tests/test_elsa.py tests/test_model.py tests/test_training.py tests/test_checkpoint.py \
    tests/test_input_pipeline.py tests/test_objective.py tests/test_train_state.py \
    tests/test_format.py tests/test_scale_agreement.py tests/test_range_coder.py tests/test_tables.py \
    tests/test_codec.py tests/test_tiling.py tests/test_portability.py tests/test_images.py tests/test_zoo.py \
    tests/test_bench_train_step.py tests/test_high_depth.py tests/test_entropy.py tests/test_metrics.py \
    tests/test_export_xla.py tests/test_cli_train.py tests/test_gpu_compare.py tests/test_bf16.py \
    tests/test_compilation_cache.py tests/test_floors.py tests/test_gf2.py tests/test_cooldown.py \
    tests/test_run_log.py tests/test_gpu_keep_or_drop.py tests/test_init.py tests/test_codec_robustness.py \
    tests/test_model_file_errors.py tests/test_evaluate_inputs.py tests/test_demo.py \
    $(REFINE_TESTS) $(WHEEL_TESTS)

.PHONY: install install-new venvs test test-torch demo clean

$(VENV)/.installed: requirements/py311-tf.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/py311-tf.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(VENV_NEW)/.installed: requirements/py311-new.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_NEW)
	$(VENV_NEW)/bin/pip install -q --upgrade pip
	$(VENV_NEW)/bin/pip install -q -r requirements/py311-new.txt
	$(VENV_NEW)/bin/pip install -q --no-deps -e .
	touch $@

# The test extra for cross-framework parity: torch's CPU build and CompressAI (without
# its torchvision dependency, requirements/compressai.txt) in .venv, installed by `make test`.
# Where no such wheel can be had, the PyTorch tests skip with the reason and the rest runs;
# TORCH_INDEX=https://download.pytorch.org/whl/cpu fetches torch from PyTorch's index.
TORCH_INDEX ?=
$(VENV)/.torch-installed: $(VENV)/.installed requirements/torch-cpu.txt requirements/compressai.txt
	@$(VENV)/bin/pip install -q -r requirements/torch-cpu.txt \
	    $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	  && $(VENV)/bin/pip install -q --no-deps -r requirements/compressai.txt \
	  || echo "== torch's CPU build or CompressAI could not be installed: their parity tests will skip"
	touch $@

install: $(VENV)/.installed

install-new: $(VENV_NEW)/.installed

# The test command: both environments, side by side (most of a test's time is single-threaded
# XLA compilation, so two runs share 2 cores well); the .venv-new log is printed at the end.
# Lint first: `ruff check .` and `ruff format --check .` (pyproject.toml's [tool.ruff], the ruff
# pinned in requirements/py311-tf.txt) fail the target on any finding or unformatted file.
# The two environments install side by side (`make -j2`: the .venv chain, TensorFlow then torch,
# beside .venv-new): 150 s instead of 202 s one after the other, on an idle 2-core machine.
venvs:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.torch-installed $(VENV_NEW)/.installed

test: venvs
	@echo "== ruff check, ruff format --check"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@echo "== .venv-new (numpy 2, newest JAX) runs in the background: $(NEW_ENV_TESTS)"
	@$(VENV_NEW)/bin/python -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS) $(NEW_ENV_TESTS) \
	    --deselect $(MODEL_STEP) \
	    >.pytest-new.log 2>&1 & new=$$!; \
	echo "== .venv (pinned set with tensorflow-compression): all tests"; \
	MRACNN_OTHER_PYTHON=$(VENV_NEW)/bin/python $(VENV)/bin/python -m pytest -q -rs $(PYTEST_ARGS) \
	    --deselect $(BF16_CURVE) --ignore $(REFINE_TESTS) --ignore $(WHEEL_TESTS); \
	main=$$?; \
	wait $$new; newrc=$$?; \
	echo "== .venv-new (numpy 2, newest JAX): $(NEW_ENV_TESTS)"; cat .pytest-new.log; \
	test $$main -eq 0 && test $$newrc -eq 0

# Only the cross-framework tests (the PyTorch reference of WACNN, the parity tests of
# mracnn_jax.convert against CompressAI and the reference), in .venv with the torch extra.
test-torch: $(VENV)/.installed $(VENV)/.torch-installed
	$(VENV)/bin/python -m pytest -q -rs tests/test_torch_reference.py tests/test_convert.py

# The main job: the bundled models against JPEG and WebP on the sample images (demo_out/).
demo: $(VENV)/.installed
	$(VENV)/bin/python -m mracnn_jax.demo --out demo_out

clean:
	rm -rf $(VENV) $(VENV_NEW)
