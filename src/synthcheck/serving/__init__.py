"""Layer 6, serving: front ends over a `Detector` (the REST API and its service, the web page, Ray batch
scoring). Imports only lower layers."""
