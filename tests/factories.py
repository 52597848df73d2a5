from __future__ import annotations

import factory

from accounts.models import User
from workspaces.models import Conversation, Workspace

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save(update_fields=["password"])


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    owner = factory.SubFactory(UserFactory)


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation
        skip_postgeneration_save = True

    workspace = factory.SubFactory(WorkspaceFactory)
    topic = factory.Sequence(lambda n: f"Topic {n}")

    @factory.post_generation
    def participants(obj, create, extracted, **kwargs):
        if create:
            obj.participants.set([obj.workspace.owner, *(extracted or [])])
