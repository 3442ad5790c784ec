"""Configuration: the pydantic models of every setting and their validation, no I/O beyond reading the file.

``settings.Settings`` is the one ``BaseSettings`` (file + environment); ``routes``
holds a route's models, ``edge`` the auth/CORS/rate-limit models, ``webhooks``
the webhook endpoint models, ``upstream`` the upstream URL parser, ``names`` the
naming rules, ``hashing`` the stored-secret formats, ``base`` the one base model.
Everything may import this package.

May import: nothing else of the app.
"""
