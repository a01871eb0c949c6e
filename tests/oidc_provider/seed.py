"""``python -m tests.oidc_provider.seed``: the provider's users and the app's client, from the
JSON in ``PROVIDER_SEED`` (``users``: username, password, email, first/last name, groups;
``client``: id, secret, redirect URI, post-logout redirect URI)."""

from __future__ import annotations

import json
import os

import django


def main() -> None:
    django.setup()
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import Application

    seed = json.loads(os.environ["PROVIDER_SEED"])
    for person in seed["users"]:
        user = User.objects.create_user(
            person["username"],
            email=person["email"],
            password=person["password"],
            first_name=person.get("first_name", ""),
            last_name=person.get("last_name", ""),
        )
        for name in person.get("groups", []):
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    client = seed["client"]
    Application.objects.create(
        name="Streamside",
        client_id=client["id"],
        client_secret=client["secret"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=client["redirect_uri"],
        post_logout_redirect_uris=client.get("post_logout_redirect_uri", ""),
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )


if __name__ == "__main__":
    main()
