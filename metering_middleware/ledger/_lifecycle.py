"""``async with store:``: open on entry, close on exit, said once for every store."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["OpenClose"]


class OpenClose:
    """A base for the stores: ``async with`` calls the subclass's ``open``/``close``."""

    __slots__ = ()

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
