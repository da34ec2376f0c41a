"""Typed domain errors. The API maps them to HTTP codes in one place; the other functions log and count them."""

from __future__ import annotations


class WorksetError(Exception):
    """Base of every domain error."""


class WorksetNotFound(WorksetError):
    def __init__(self, workset_id: str) -> None:
        super().__init__(f"workset {workset_id!r} does not exist")
        self.workset_id = workset_id


class WorksetExists(WorksetError):
    def __init__(self, workset_id: str) -> None:
        super().__init__(f"workset {workset_id!r} is already registered")
        self.workset_id = workset_id


class ClusterNotFound(WorksetError):
    def __init__(self, name: str) -> None:
        super().__init__(f"cluster {name!r} is not registered")
        self.name = name


class ClusterRetired(WorksetError):
    def __init__(self, name: str) -> None:
        super().__init__(f"cluster {name!r} is retired; register it again to give it work")
        self.name = name


class FolderNotFound(WorksetError):
    def __init__(self, bucket: str, folder: str) -> None:
        super().__init__(f"s3://{bucket}/{folder} holds no objects")
        self.bucket = bucket
        self.folder = folder


class InvalidRequest(WorksetError):
    """A request the API can read but not answer as asked; the message says why and what to ask instead."""


class NotAWorksetFolder(WorksetError):
    """A request named a place that cannot be a workset folder (another bucket, outside the prefix, nested)."""


class TransitionRefused(WorksetError):
    """The state table does not allow this move. `rule` says which rule refused it."""

    def __init__(self, workset_id: str, from_state: str, to_state: str, rule: str) -> None:
        super().__init__(f"workset {workset_id!r}: {from_state} -> {to_state} refused: {rule}")
        self.workset_id = workset_id
        self.from_state = from_state
        self.to_state = to_state
        self.rule = rule


class ConcurrentUpdate(WorksetError):
    """Another writer changed the workset between our read and our conditional write."""

    def __init__(self, workset_id: str, expected_version: int) -> None:
        super().__init__(f"workset {workset_id!r} changed since version {expected_version}; read it again")
        self.workset_id = workset_id
        self.expected_version = expected_version


class LeaseLost(WorksetError):
    """The caller's lease token is not the workset's current one (expired and taken over, or never held)."""

    def __init__(self, workset_id: str, token: int | None) -> None:
        super().__init__(f"workset {workset_id!r}: lease token {token} is not the current lease")
        self.workset_id = workset_id
        self.token = token
