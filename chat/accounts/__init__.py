"""Accounts: sign-up and login pages, signing out everywhere, daily quotas and usage."""
