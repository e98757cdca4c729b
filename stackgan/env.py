"""Keep the project offline: no analytics, no hub look-ups, unless the user set otherwise.

Imported first by `stackgan/__init__.py`, before gradio or huggingface_hub can read these.
"""

import os

for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_key, _value)
