// Swagger UI over the schema this server serves; no external requests (no validator badge).
window.ui = SwaggerUIBundle({
  url: "/v1/schema/openapi",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
});
