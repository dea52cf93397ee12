// chime's one script (no build step, no library). Every element with `data-live="<url>"`
// has its contents replaced by the HTML that the server sends on that event stream, so the
// delivery log and the overview follow deliveries without a reload.
"use strict";
document.querySelectorAll("[data-live]").forEach(function (el) {
  var source = new EventSource(el.getAttribute("data-live"));
  source.addEventListener("html", function (e) {
    el.innerHTML = e.data;
    el.setAttribute("data-updated", String(Date.now()));
  });
});
