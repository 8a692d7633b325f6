// The widget manager finds every front end on this site, never on a CDN: loaded after require.js and the generated
// front-ends.js, before embed-amd.js (docs/conf.py, nb_ipywidgets_js). Paths are worked out from this script's own
// address, so the pages work from any folder depth, from a local server and from file://.
(function () {
  "use strict";
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  // Font Awesome's fonts (the widgets' icons), which embed-amd.js looks for beside itself
  window.__jupyter_widgets_assets_path__ = here;
  // each front end that a Python package ships (anywidget, ipyevents, ...), copied here by the site build
  var paths = {};
  (window.crossvitFrontEnds || []).forEach(function (module) { paths[module] = here + module; });
  window.requirejs.config({ paths: paths });
})();
