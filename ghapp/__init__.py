"""ghapp: a GitHub App that runs ephemeral self-hosted GitHub Actions runners as Kubernetes Jobs."""

__version__ = "0.1.0"
