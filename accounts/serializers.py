from __future__ import annotations

from rest_framework import serializers


class LoginInputSerializer(serializers.Serializer):
    """JSON `{"email", "password"}` or the OAuth2 password form's `username`/`password`."""

    email = serializers.EmailField(required=False, max_length=254)
    username = serializers.CharField(required=False, max_length=254)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)

    def validate(self, attrs: dict) -> dict:
        login = attrs.get("email") or attrs.get("username")
        if not login:
            raise serializers.ValidationError({"email": ["This field is required."]})
        return {"email": login.strip().lower(), "password": attrs["password"]}


class RefreshInputSerializer(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096)


class ClaimsSerializer(serializers.Serializer):
    oid = serializers.UUIDField()
    name = serializers.CharField()
    email = serializers.EmailField()


class TokenPairSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()
    refresh_token = serializers.CharField()
    claims = ClaimsSerializer()


class VerifyOutputSerializer(serializers.Serializer):
    user_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    email = serializers.EmailField()


class ExchangeInputSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=64)
    id_token = serializers.CharField(max_length=16384)


class LoginCodeInputSerializer(serializers.Serializer):
    login_code = serializers.CharField(max_length=256)


class ProviderSerializer(serializers.Serializer):
    name = serializers.CharField()
    login_url = serializers.CharField()


class ProvidersOutputSerializer(serializers.Serializer):
    providers = ProviderSerializer(many=True)
