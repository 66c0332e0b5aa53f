"""Notifier providers: Slack (:mod:`providers.notify.slack`) and email
(:mod:`providers.notify.email`); the escalation itself and the port are
:mod:`engine.tools.notify`."""
