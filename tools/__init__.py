"""Developer tools that are not part of the product: serving the app for tests and benchmarks, driving it
in a browser, making the docs' screenshots. Product code (janusflow_core, app) never imports them."""
