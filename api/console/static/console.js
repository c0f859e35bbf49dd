/* Progressive enhancement: refresh the progress bars of running jobs in place.
   Without JavaScript the page reloads itself instead (<noscript> meta refresh). */
(function () {
  "use strict";
  var INTERVAL_MS = 1000;
  var url = document.body.getAttribute("data-progress-url");
  var reloadWhenDone = document.body.hasAttribute("data-reload-when-done");

  function liveIds() {
    var ids = [];
    document.querySelectorAll("[data-job-live]").forEach(function (el) {
      ids.push(el.getAttribute("data-job-live"));
    });
    return ids;
  }

  function apply(el, job) {
    Object.keys(job.bars).forEach(function (name) {
      var bar = el.querySelector('[data-bar="' + name + '"]');
      var text = el.querySelector('[data-text="' + name + '"]');
      if (bar) { bar.max = job.bars[name].max; bar.value = job.bars[name].value; }
      if (text) { text.textContent = job.bars[name].text; }
    });
    var status = el.querySelector("[data-status]");
    if (status) {
      status.textContent = job.label || job.status;
      status.className = "status status-" + (job.kind || job.status);
    }
    if (!job.active) { el.removeAttribute("data-job-live"); }
  }

  function tick() {
    var ids = liveIds();
    if (!ids.length || !url) { return; }
    var query = ids.map(function (id) { return "job=" + encodeURIComponent(id); }).join("&");
    fetch(url + "?" + query, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (response.status === 429) {
          // Over the console's budget: wait as long as the server says, then poll again.
          var waitS = parseInt(response.headers.get("Retry-After"), 10);
          throw {retryMs: (waitS > 0 ? waitS : 5) * 1000};
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        var finished = false;
        ids.forEach(function (id) {
          var job = data.jobs[id];
          var el = document.querySelector('[data-job-live="' + id + '"]');
          if (job && el) { apply(el, job); finished = finished || !job.active; }
        });
        if (finished && reloadWhenDone) { window.location.reload(); return; }
        setTimeout(tick, INTERVAL_MS);
      })
      .catch(function (failure) {
        setTimeout(tick, (failure && failure.retryMs) || 5 * INTERVAL_MS);
      });
  }

  if (liveIds().length) { setTimeout(tick, INTERVAL_MS); }
})();
