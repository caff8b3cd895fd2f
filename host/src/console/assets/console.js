// The Sluice console's only script: while a run is going, its steps are
// replaced by the fragments the server sends (server-sent events); when it
// ends, the page is reloaded once to show the outcome and the report.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.live) return;
  const events = new EventSource(live.dataset.live);
  events.addEventListener("steps", function (e) {
    const parsed = new DOMParser().parseFromString(e.data, "text/html");
    const steps = parsed.getElementById("steps");
    if (steps) live.replaceChildren(document.importNode(steps, true));
  });
  events.addEventListener("end", function () {
    events.close();
    window.location.reload();
  });
})();
