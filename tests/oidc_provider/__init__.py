"""A small OpenID Connect provider for the single sign-on tests: django-oauth-toolkit in a
Django project of its own (its own SQLite file, users and session cookie), started by
``tests/support/oidc_provider.py`` on a loopback port."""
