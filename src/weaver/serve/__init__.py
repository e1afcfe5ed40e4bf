"""Serving: an OpenAI-compatible HTTP API, dynamic batching over several adapters, and a writer's web page.

    weaver serve --model runs/headline --adapter summary=runs/summary --port 8000

`app.create_app(settings)` builds the FastAPI app; `backend` runs the model; `scheduler` batches requests.
"""
