"""The Gradio web UI for stackgan pipelines: `python -m app --model PATH` or `stackgan app`.

`app.logic` holds the callbacks as pure functions, `app.ui.build_demo` the page,
`app.main` the command line. It uses only the public pipeline API.
"""

import stackgan  # noqa: F401  (offline settings: must run before gradio is imported)
