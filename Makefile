# Newcomers:  make figures   (execute notebooks/ on the bundled model, write figures/)
#             make test      (run the test suite)
# Every target bootstraps .venv on first use. The stamp file below records a finished install;
# it is rebuilt when pyproject.toml is newer, so re-runs are fast and dependency edits get installed.

PYTHON      ?= python3
VENV        ?= .venv
# Installed first, on its own, so pip takes the pinned local wheels; override to use another build,
# e.g.  make venv TORCH_SPEC='torch torchvision --index-url https://download.pytorch.org/whl/cpu'
TORCH_SPEC  ?= torch==2.14.1 torchvision==0.29.1
EXTRAS      ?= test,pretrained,dev,teach,site,bench
PYTEST_ARGS ?=
FIGURES_ARGS ?=
LAB_ARGS    ?=

PYTEST_WORKERS ?= auto

VPY   := $(VENV)/bin/python
ifeq ($(PYTEST_WORKERS),0)
PYTEST = $(VPY) -m pytest -q
else
PYTEST = OMP_NUM_THREADS=1 $(VPY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder
endif
STAMP := $(VENV)/.crossvit-lab-installed

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast figures site slides kit lab lint assignments grade clean-venv

help:
	@echo "make figures   execute notebooks/[0-9][0-9]_*.ipynb (cached) and write figures/ (FIGURES_ARGS='--only 02')"
	@echo "make test      run the whole test suite (what CI runs)"
	@echo "make test-fast the tests not marked slow (no notebook runs, no browser): the edit-test loop"
	@echo "make site      the course executed, as a static HTML site: site/html/index.html (works offline)"
	@echo "make slides    reveal.js lecture decks from the executed notebooks (cached): site/slides/ (work offline)"
	@echo "make kit       dist/crossvit-lab-course.zip (students: no solutions, no answer key) and"
	@echo "               dist/crossvit-lab-course-teacher.zip (with both): the wheel and the notebooks, for hosted services"
	@echo "make lab       JupyterLab on 127.0.0.1, at the repository root, opening notebooks/"
	@echo "make assignments  an nbgrader course in course/: source/ and release/ (student) notebooks"
	@echo "make grade SUBMISSIONS=DIR  autograde DIR/<student>/<notebook>.ipynb into grades.csv and feedback files"
	@echo "               (STUDENTS=FILE: a class list, one id a line; OVERWRITE=1 replaces grades.csv)"
	@echo "make lint      ruff check"
	@echo "make venv      create/update $(VENV) (automatic for the targets above)"
	@echo "make clean-venv  delete $(VENV)"

$(STAMP): pyproject.toml
	@test -x $(VPY) || { echo ">> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install $(TORCH_SPEC)
	$(VPY) -m pip install -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP)

# make test runs the property-based tests with more examples than the fast set (tests/conftest.py's profiles).
# Both spread the tests over PYTEST_WORKERS processes (pytest-xdist; `auto`: one per CPU core, PYTEST_WORKERS=0 runs
# them in this process), each with one torch thread: two processes of two threads each on 2 cores run the fast set
# three times slower than one. Work is handed out longest first, a module at a time (tests/conftest.py's schedule);
# when two workers need the same notebook, one executes it and the other reads the cache.
test: $(STAMP)
	CROSSVIT_HYPOTHESIS_PROFILE=thorough $(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

figures: $(STAMP)
	$(VPY) figures/build.py $(FIGURES_ARGS)

# OVERWRITE=1 (or yes / true) replaces what a rerun would otherwise refuse; OVERWRITE=0, no or empty does not
OVERWRITE_FLAG = $(if $(filter 1 yes true YES TRUE True,$(OVERWRITE)),--overwrite)

assignments: $(STAMP)
	$(VPY) -m crossvit.exercises assignments --course course $(OVERWRITE_FLAG)

# quoted: a folder or class list whose name has spaces stays one argument
SUBMISSIONS ?= submissions
grade: $(STAMP)
	$(VPY) -m crossvit.exercises grade "$(SUBMISSIONS)" --course course --csv grades.csv $(OVERWRITE_FLAG) \
		$(if $(STUDENTS),--students "$(STUDENTS)")

# Sphinx + myst-nb + furo (the `site` extra). Each notebook is executed once and cached (figures/build.py's
# runner, shared with `make figures`, `make slides` and the notebook tests; .cache/notebooks/), so a rebuild with
# nothing changed starts no kernel, and a rerun after a failure continues from the cache. -W --keep-going: every
# warning (a broken link, a notebook that failed) fails the build, after every page is built.
SITE_DIR ?= site
site: $(STAMP)
	$(VPY) -m sphinx -W --keep-going -q -b html -c docs -d $(SITE_DIR)/doctrees . $(SITE_DIR)/html
	@echo "site: $(SITE_DIR)/html/index.html"

# reveal.js decks of the cached executions (executing what is not cached), with reveal.js served beside them.
slides: $(STAMP)
	$(VPY) docs/course_kit.py slides --out $(SITE_DIR)/slides

kit: $(STAMP)
	$(VPY) docs/course_kit.py bundle --edition both --out dist

# Rooted at the repository so that the notebooks' links to ../docs open; etc/jupyterlab/overrides.json opens
# Markdown files rendered (so README.md#terms scrolls to its section) and leaves the user's own settings alone.
# A learner's figures go to notebooks/crossvit-figures/ (gitignored), never into the tracked figures/: only
# `make figures` writes those.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.app_settings_dir="$(CURDIR)/etc/jupyterlab" --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
