"""The test broker lives in the package (the demo starts one too); re-exported here."""

from ids_daemon.devbroker import TansuBroker, TansuNotFound, free_port, tansu_binary  # noqa: F401
