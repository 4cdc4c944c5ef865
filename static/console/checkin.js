// The check-in page: typed or keyboard-wedge codes, and QR codes through the camera.
// The page works without this script (its forms post and the server answers with the page);
// with it, answers arrive without a reload, the counts stay live, and the camera can scan.
// Camera decoding: the browser's BarcodeDetector where it reads QR codes, else the vendored jsQR.
(function () {
  "use strict";

  var root = document.getElementById("checkin");
  if (!root) { return; }
  var RESULTS = {
    ok: "VALID", already_checked_in: "ALREADY CHECKED IN", void: "VOID",
    wrong_event: "WRONG EVENT", unknown: "UNKNOWN"
  };
  var SAME_CODE_PAUSE_MS = 3000;
  var COUNTS_EVERY_MS = 10000;
  var codeInput = document.querySelector("#code-form input[name=code]");
  var busy = false;
  var lastCode = "";
  var lastAt = 0;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": root.dataset.csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    });
  }

  function showCounts(data) {
    if (typeof data.checked_in === "number") {
      document.getElementById("checked-in").textContent = data.checked_in;
      document.getElementById("expected").textContent = data.expected;
    }
  }

  function showAnswer(kind, title, message, code) {
    var answer = document.getElementById("answer");
    answer.className = "answer answer-" + kind;
    document.getElementById("answer-result").textContent = title;
    document.getElementById("answer-message").textContent = message;
    document.getElementById("answer-code").textContent = code || "";
    var undo = document.getElementById("undo-form");
    undo.hidden = !(kind === "ok" || kind === "already_checked_in");
    document.getElementById("undo-code").value = code || "";
    if (navigator.vibrate) { navigator.vibrate(kind === "ok" ? 80 : [60, 60, 60]); }
  }

  function scan(code) {
    code = (code || "").trim();
    var now = Date.now();
    if (!code || busy || (code === lastCode && now - lastAt < SAME_CODE_PAUSE_MS)) { return; }
    busy = true;
    lastCode = code;
    lastAt = now;
    post(root.dataset.scanUrl, { code: code }).then(function (reply) {
      var data = reply.data;
      if (data.result) {
        showAnswer(data.result, RESULTS[data.result] || data.result, data.message, data.code);
        showCounts(data);
      } else {
        showAnswer("unknown", "ERROR", data.error || "The shop did not answer; try again.", code);
      }
    }).catch(function () {
      showAnswer("unknown", "NO CONNECTION", "The shop could not be reached. Try again.", code);
    }).then(function () {
      busy = false;
      if (codeInput) { codeInput.value = ""; codeInput.focus(); }
    });
  }

  document.getElementById("code-form").addEventListener("submit", function (event) {
    event.preventDefault();
    lastCode = "";  // typed on purpose: always ask, even the same code again
    scan(codeInput.value);
  });

  document.getElementById("undo-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var code = document.getElementById("undo-code").value;
    post(root.dataset.undoUrl, { code: code }).then(function (reply) {
      showCounts(reply.data);
      showAnswer("idle", "UNDONE", reply.data.undone ? "Check-in undone for this ticket." :
        "That ticket was not checked in here.", code);
      document.getElementById("undo-form").hidden = true;
    });
  });

  setInterval(function () {
    fetch(root.dataset.countsUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) { showCounts(data); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }, COUNTS_EVERY_MS);

  // The camera ------------------------------------------------------------------------------------

  var startButton = document.getElementById("camera-start");
  var video = document.getElementById("camera");
  var canvas = document.getElementById("frame");
  var note = document.getElementById("camera-note");

  function nativeDetector() {
    if (!("BarcodeDetector" in window)) { return Promise.resolve(null); }
    return window.BarcodeDetector.getSupportedFormats().then(function (formats) {
      return formats.indexOf("qr_code") >= 0 ? new window.BarcodeDetector({ formats: ["qr_code"] }) : null;
    }).catch(function () { return null; });
  }

  function loadDecoder() {
    if (window.jsQR) { return Promise.resolve(); }
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = root.dataset.decoderUrl;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }

  function decodeWithJsQR() {
    var width = video.videoWidth, height = video.videoHeight;
    if (!width || !height) { return Promise.resolve(null); }
    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(video, 0, 0, width, height);
    var found = window.jsQR(context.getImageData(0, 0, width, height).data, width, height,
      { inversionAttempts: "dontInvert" });
    return Promise.resolve(found ? found.data : null);
  }

  function startCamera() {
    startButton.hidden = true;
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false })
      .then(function (stream) {
        video.srcObject = stream;
        video.hidden = false;
        return video.play();
      })
      .then(nativeDetector)
      .then(function (detector) {
        if (detector) {
          note.textContent = "Scanning with the browser's barcode detector.";
          return function () {
            return detector.detect(video).then(function (codes) { return codes.length ? codes[0].rawValue : null; });
          };
        }
        note.textContent = "Scanning with the built-in decoder.";
        return loadDecoder().then(function () { return decodeWithJsQR; });
      })
      .then(function (decode) {
        function tick() {
          decode().then(function (code) { if (code) { scan(code); } })
            .catch(function () { /* a frame that could not be read */ })
            .then(function () { setTimeout(tick, 200); });
        }
        tick();
      })
      .catch(function (error) {
        note.textContent = "The camera is not available (" + (error && error.name || "error") +
          "). Type the code instead.";
        startButton.hidden = false;
      });
  }

  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    startButton.hidden = false;
    startButton.addEventListener("click", startCamera);
  } else {
    note.textContent = "This browser offers no camera here (it needs https). Type or wedge-scan the code.";
  }
}());
