from __future__ import annotations

import logging
import re

# Morph can only be given a URL, so the shared secret travels in its query string, and every
# access log (runserver's, gunicorn's, a proxy's) would write it down. This hides it in
# runserver's; configure the same for whatever server and proxy a deployment uses.
# "token" is morph_webhooks.auth.TOKEN_PARAMETER, which cannot be imported here: logging is
# configured before the apps are loaded, and that module imports models.
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*")


class RedactToken(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = TOKEN_IN_QUERY.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
