"""Shared pytest setup: headless matplotlib, no network. Nothing is seeded globally; tests seed what they use."""

import os

# Must happen before anything imports matplotlib (conftest is imported before the test modules).
os.environ["MPLBACKEND"] = "Agg"
# Tests never download (weights included): huggingface_hub reads this when it is imported, and notebook kernels
# started by the tests inherit it, so a notebook uses real ImageNet weights only when they are already cached.
os.environ["HF_HUB_OFFLINE"] = "1"

import matplotlib.pyplot as plt  # noqa: E402  (after MPLBACKEND is set)
import pytest  # noqa: E402
import torch  # noqa: E402

import crossvit  # noqa: E402

try:  # the property-based tests (tests/test_properties.py): Hypothesis is in the `test` extra
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - test_properties.py skips itself
    settings = None

HYPOTHESIS_PROFILE_VARIABLE = "CROSSVIT_HYPOTHESIS_PROFILE"
"""Picks the Hypothesis profile: ``fast`` (the default, a few examples: the edit-test loop and ``make test-fast``)
or ``thorough`` (``make test`` sets it: more examples). Both are derandomized (seeded), so a run is repeatable, and
keep no example database in the repository."""

if settings is not None:
    _common = dict(derandomize=True, database=None, deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("fast", max_examples=5, **_common)
    settings.register_profile("thorough", max_examples=40, **_common)
    settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_VARIABLE, "fast"))

HELD_OUT_TEST_SEED = 2**40 + 2**33 + 12
"""Shapes images of the shared ``shapes`` fixture: above every seed the trainer touches, never a benchmark's."""


@pytest.fixture(autouse=True)
def close_figures():
    """Every test starts and ends without open matplotlib figures."""
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model() -> crossvit.CrossViT:
    """The bundled model's architecture with random weights (seed 0), eval mode: 96 px input, small branch 8x8
    grid of 12 px patches, large branch 5x5 grid of 16 px on an 80 px resize. A module may define its own."""
    torch.manual_seed(0)
    return crossvit.create_model("shapes_tiny").eval()


@pytest.fixture(scope="module")
def bundled() -> crossvit.CrossViT:
    """The bundled trained model (``create_model("shapes_tiny", pretrained=True)``)."""
    return crossvit.load_pretrained()


@pytest.fixture(scope="session")
def micro() -> tuple[crossvit.CrossViT, torch.Tensor]:
    """The smallest CrossViT that still has everything the library looks at (two branches of self-attention, a
    fusion layer, both heads), random weights (seed 0), eval mode, and two 48 px shapes images for it: for tests
    whose subject does not depend on the model's size (memory over repeated calls, bookkeeping), where a forward
    pass costs a fraction of the bundled model's. Shared by the whole session: do not change it in place."""
    torch.manual_seed(0)
    config = crossvit.PaperConfig(img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32),
                                  depth=((1, 1, 0),) * 2, num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0),
                                  num_classes=4)
    images = crossvit.data.make_shapes(2, HELD_OUT_TEST_SEED, 48)[0]
    return crossvit.CrossViT(config).eval(), images


@pytest.fixture(scope="module")
def shapes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four held-out shapes images (4, 3, 96, 96), their labels and object masks."""
    return crossvit.data.make_shapes(4, HELD_OUT_TEST_SEED, 96)


@pytest.fixture(scope="session")
def save_timm_model(tmp_path_factory):
    """``save(name, seed=None, **kwargs) -> (model, path)``: a timm CrossViT of random weights (``torch.manual_seed
    (seed)`` first unless None; ``kwargs`` go to ``timm.create_model``), eval mode, its state dict written as a
    .safetensors file in a fresh folder. Skips the test without timm."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    def save(name: str, seed: int | None = None, **kwargs):
        if seed is not None:
            torch.manual_seed(seed)
        model = timm.create_model(name, **kwargs).eval()
        path = tmp_path_factory.mktemp("timm_weights") / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return model, path

    return save


# make test's schedule. The Makefile runs the tests with pytest-xdist's `--dist loadscope --no-loadscope-reorder`, and
# the scheduler below decides what a unit of work is: a whole module (so its module-scoped fixtures, e.g.
# test_site.py's site build, run once), except in SPLIT_MODULES, whose tests are long one by one and each a unit of
# its own. A free worker takes the next unit in collection order, and the collection is sorted so that the units that
# take minutes go first, longest first (measured with `make test PYTEST_ARGS=--durations=15`): no worker is left with
# one at the end while the other idles. The order changes only how long the run takes, never what it asserts.
# (xdist's own `--dist loadgroup` would do this with marks, but it renames node ids in a way this pytest ignores.)
SPLIT_MODULES = ("test_notebooks.py", "test_browser.py")
LONGEST_FIRST = (
    "tests/test_notebooks.py::test_notebook_runs_with_the_solutions[06",  # trains twice: ~3 min
    "tests/test_site.py",  # `make site` executes the committed notebooks (their tests then read the cache): ~4 min
    "tests/test_notebooks.py::test_notebook_runs_with_the_solutions[05",
    "tests/test_grading.py",
    "tests/test_browser.py::test_every_notebook_link_opens_its_target_in_jupyterlab",
    "tests/test_notebooks.py::test_notebook_runs_with_the_solutions",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        for index, prefix in enumerate(LONGEST_FIRST):
            if item.nodeid.startswith(prefix):
                return index
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: within a rank, the collection order


def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadscope``: a module per unit of work, but a test per unit in SPLIT_MODULES."""
    if config.getvalue("dist") != "loadscope":
        return None  # xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndLongTests(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return nodeid if module.rsplit("/", 1)[-1] in SPLIT_MODULES else module

    return ModulesAndLongTests(config, log)
