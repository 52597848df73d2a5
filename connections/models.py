"""Each person's connection to an `oauth` expert, the flows under way, and the core's OAuth clients.

Secrets (tokens, client secrets) are stored encrypted (`crypto`), never shown (admin, export,
events, logs)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class OAuthClient(models.Model):
    """The core's client at one authorization server (keyed by its issuer): pre-registered by an
    expert's owner, the core's client ID metadata document, or dynamically registered."""

    class Registration(models.TextChoices):
        PRE_REGISTERED = "pre_registered"
        METADATA_DOCUMENT = "metadata_document"
        DYNAMIC = "dynamic"

    issuer = models.CharField(max_length=500)
    client_id = models.CharField(max_length=500)
    client_secret = models.BinaryField(default=b"", blank=True, editable=False)  # encrypted
    token_endpoint_auth_method = models.CharField(max_length=32, default="none")
    registration = models.CharField(max_length=20, choices=Registration.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "client_id"], name="oauth_client_per_issuer")]

    def __str__(self) -> str:
        return f"{self.client_id} at {self.issuer}"


class Connection(models.Model):
    """One person's account at one `oauth` expert's authorization server."""

    class Status(models.TextChoices):
        CONNECTED = "connected"
        NEEDS_RECONSENT = "needs_reconsent"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expert = models.ForeignKey("workspaces.Expert", on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(OAuthClient, on_delete=models.PROTECT, related_name="connections")
    issuer = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CONNECTED)
    scopes = models.JSONField(default=list, blank=True)  # granted
    wanted_scopes = models.JSONField(default=list, blank=True)  # asked by a step-up, granted kept
    access_token = models.BinaryField(default=b"", editable=False)  # encrypted
    refresh_token = models.BinaryField(default=b"", blank=True, editable=False)  # encrypted
    expires_at = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(default=timezone.now)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refreshes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "expert"], name="connection_per_user_expert")]

    def __str__(self) -> str:
        return f"{self.user_id} at {self.expert_id} ({self.status})"


class PendingFlow(models.Model):
    """An authorization code flow under way (`POST /connections/<id>` until its callback): bound to
    the browser that started it by `browser` (the SHA-256 of its HttpOnly cookie)."""

    state = models.CharField(max_length=64, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expert = models.ForeignKey("workspaces.Expert", on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="+")
    browser = models.CharField(max_length=64)
    verifier = models.BinaryField(editable=False)  # encrypted PKCE code verifier
    scopes = models.JSONField(default=list, blank=True)
    return_to = models.CharField(max_length=500, default="/console/")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"flow of {self.user_id} for {self.expert_id}"
