// Quiet refresh: every data-refresh seconds the page is fetched again and its <main> swapped in
// (no announcement), unless the reader is working inside it (focus in the main content).
(function () {
  var main = document.getElementById("contenu");
  var seconds = main && Number(main.getAttribute("data-refresh"));
  if (!seconds) return;
  setInterval(function () {
    if (main.contains(document.activeElement) && document.activeElement !== main) return;
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("contenu");
        if (fresh) { main.innerHTML = fresh.innerHTML; document.title = doc.title; }
      })
      .catch(function () {});
  }, seconds * 1000);
})();
