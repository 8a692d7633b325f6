// The widget manager finds every front end on this site, never on a CDN: loaded after require.js and before
// embed-amd.js (docs/conf.py, nb_ipywidgets_js). Paths are worked out from this script's own address, so the
// pages work from any folder depth, from a local server and from file://.
(function () {
  "use strict";
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  // Font Awesome's fonts (the widgets' icons), which embed-amd.js looks for beside itself
  window.__jupyter_widgets_assets_path__ = here;
  // anywidget's front end: the AMD module its Python package ships, copied here by the site build
  window.requirejs.config({ paths: { anywidget: here + "anywidget" } });
})();
