"""The browser side of the widgets, served by the course site (``docs/conf.py``) and the slides
(``docs/course_kit.py``) themselves, so that saved widgets come alive with no kernel and no network.

``docs/_static/widgets/`` holds the widget manager (vendored, see its README); :func:`copy_front_ends` adds the
front ends that Python packages ship, copied from the installed packages so that they always match the Python side
that saved the widget state, and ``front-ends.js``, which names them for ``offline.js``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "_static"
MANAGER_SCRIPTS = ("widgets/require.js", "widgets/front-ends.js", "widgets/offline.js", "widgets/embed-amd.js")
"""What a page with widgets loads, in this order (paths under the static folder)."""

PACKAGED_FRONT_ENDS = {
    "anywidget": ("anywidget", "nbextension/index.js"),
}
"""Widget front ends that ship inside Python packages, as the AMD module each package gives the classic notebook:
widget module name (a widget's ``_model_module``) -> (package, file inside it). The widget manager has ipywidgets'
own (base, controls, output) built in; a widget of any other module needs its file here to live offline."""


def copy_front_ends(folder: Path) -> list[str]:
    """Write ``folder/widgets/<module>.js`` (and its licence) for every installed package of
    :data:`PACKAGED_FRONT_ENDS`, and ``folder/widgets/front-ends.js`` naming them; returns the module names."""
    (folder / "widgets").mkdir(parents=True, exist_ok=True)
    served = []
    for module, (package_name, inside) in PACKAGED_FRONT_ENDS.items():
        spec = importlib.util.find_spec(package_name)
        if spec is None or not spec.origin or not (Path(spec.origin).parent / inside).is_file():
            continue  # not installed: no notebook can show its widgets
        package = Path(spec.origin).parent
        shutil.copyfile(package / inside, folder / "widgets" / f"{module}.js")
        licences = sorted(package.parent.glob(f"{package_name}-*.dist-info/licenses/LICENSE*"))
        if licences:
            shutil.copyfile(licences[0], folder / "widgets" / f"{module}.LICENSE.txt")
        served.append(module)
    (folder / "widgets" / "front-ends.js").write_text(
        "// Generated (docs/widget_assets.py): the widget front ends served beside this file.\n"
        f"window.crossvitFrontEnds = {json.dumps(served)};\n")
    return served
