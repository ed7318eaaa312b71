// Starts Redoc on this server's description. Redoc writes its styles into <style> elements, which the
// content security policy allows only with this response's nonce: Redoc puts it on each of them.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const nonce = document.querySelector('meta[name="style-nonce"]').content;
  Redoc.init("/openapi.json", { nonce }, document.getElementById("redoc"));
});
