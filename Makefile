# Two environments:
#   .venv      Python 3.11, the pinned set beside tensorflow-compression 2.14.1 (requirements/py311-tf.txt)
#   .venv-new  Python 3.11, the newest JAX/Flax/optax/orbax with numpy 2 and no TensorFlow
#              (requirements/py311-new.txt); the model, training and checkpoint tests run here too.
PYTHON ?= python3.11
VENV := .venv
VENV_NEW := .venv-new
PYTEST_ARGS ?=
NEW_ENV_TESTS ?= tests/test_elsa.py tests/test_model.py tests/test_training.py tests/test_checkpoint.py

.PHONY: install install-new test test-torch demo clean

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

install: $(VENV)/.installed

install-new: $(VENV_NEW)/.installed

# The test command: both environments.
test: $(VENV)/.installed $(VENV_NEW)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
	$(VENV_NEW)/bin/python -m pytest -q $(PYTEST_ARGS) $(NEW_ENV_TESTS)

# The PyTorch reference of WACNN (optional; needs the torch CPU wheel, see requirements/torch-cpu.txt).
.venv-torch/.installed: requirements/torch-cpu.txt
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/pip install -q -r requirements/torch-cpu.txt
	touch $@

test-torch: .venv-torch/.installed
	.venv-torch/bin/python -m pytest -q tests/test_torch_reference.py

# The main job: the model summary of configs/mracnn.py.
demo: $(VENV)/.installed
	$(VENV)/bin/python -m mracnn_jax.summary --config configs/mracnn.py

clean:
	rm -rf $(VENV) $(VENV_NEW)
