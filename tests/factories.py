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

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # The password is set before the insert, as `create_user` does: a change after it would be
        # a password change (ending sessions, and an audit entry).
        return model_class.objects.create_user(*args, password=PASSWORD, **kwargs)


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
