// Starts Swagger UI on this server's description. No validator badge: it would send the
// description's address to another host (and the content security policy refuses it anyway).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
  });
});
