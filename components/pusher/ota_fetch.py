"""Reading an OTA repository's files from an http(s)/file URL or a directory, for the device client.

Standard library only, but for :func:`fetcher_class` (python-tuf's fetcher interface over it).
Every failure to read (a network or protocol error, a missing or unreadable file) is a
:class:`FetchError` naming the file and the exception type, so a caller handles one exception; file
paths are checked to stay inside the repository first.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request

from components.pusher import safe_json
from components.pusher.signing import SignatureVerificationError

CHUNK_BYTES = 1 << 16
MAX_METADATA_BYTES = 5 << 20  # python-tuf's default bound for targets metadata

PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
# The name rules of models and channels, for the publisher (components.pusher.config imports them
# from here) and the device client alike. A location is read as .../<model>/<channel> only when
# its last two segments follow them.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
RESERVED_CHANNELS = ("releases",)


def safe_relative_path(path) -> str:
    """Returns ``path`` if it is a plain relative path inside the channel, else raises.

    Raises:
      SignatureVerificationError: for absolute paths, ``..`` or ``.`` segments, backslashes, URL syntax
        (``:``, ``%``, ``?``, ``#``) or any character outside ``[A-Za-z0-9._-]``.
    """
    if not isinstance(path, str) or not path:
        raise SignatureVerificationError(f"file path {path!r} is not a non-empty string")
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or not PLAIN_NAME.match(segment):
            raise SignatureVerificationError(
                f"file path {path!r} escapes or is not plain inside the channel"
            )
    return path


def iter_chunks(reader, limit: int):
    """Yields ``reader``'s chunks until its end, or until just past ``limit`` bytes.

    Raises:
      http.client.IncompleteRead: when an HTTP body ends before its Content-Length (http.client
        returns a short body to sized reads without saying so).
    """
    size = 0
    while size <= limit:
        chunk = reader.read(min(CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            missing = getattr(reader, "length", None)
            if isinstance(missing, int) and missing > 0:
                raise http.client.IncompleteRead(b"", missing)
            return
        size += len(chunk)
        yield chunk


class FetchError(SignatureVerificationError):
    """A channel file could not be fetched (network, protocol or file system); says which and why."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


class ChannelSource:
    """A channel: an http(s)/file URL or a directory path."""

    def __init__(self, location: str, timeout_s: float):
        if not isinstance(location, str) or not location:
            raise SignatureVerificationError("the channel location is empty")
        self.location = location
        self.timeout_s = timeout_s
        parsed = urllib.parse.urlparse(location)
        self.is_url = parsed.scheme in ("http", "https", "file")
        if "://" in location and not self.is_url:
            raise SignatureVerificationError(
                f"unsupported channel location {location!r} (http, https, path)"
            )
        if self.is_url and (parsed.query or parsed.fragment or parsed.params):
            raise SignatureVerificationError(
                f"channel location {location!r} has a query or fragment"
            )

    def path_names(self) -> tuple[str | None, str | None]:
        """(model, channel) the location names: ``.../<model>/<channel>``; None where it does not.

        The last segment is the channel when it is a valid channel name; the one before it is the
        model only then, and when it is a valid model name.
        """
        if self.is_url:
            segments = urllib.parse.urlparse(self.location).path.rstrip("/").split("/")
        else:
            segments = os.path.abspath(self.location).split(os.sep)
        channel = segments[-1]
        if not re.match(CHANNEL_PATTERN, channel) or channel in RESERVED_CHANNELS:
            return None, None
        model = segments[-2] if len(segments) >= 2 else ""
        return (model if re.match(MODEL_NAME_PATTERN, model) else None), channel

    @contextlib.contextmanager
    def open(self, rel: str):
        """Opens a channel file for reading; every failure is a :class:`FetchError`."""
        rel = safe_relative_path(rel)
        if self.is_url:
            with self._open_url(self.location.rstrip("/") + "/" + rel) as response:
                yield response
        else:
            with self._open_file(rel) as f:
                yield f

    @contextlib.contextmanager
    def _open_url(self, url: str):
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                yield response
        except SignatureVerificationError:
            raise
        except urllib.error.HTTPError as e:
            e.close()
            raise FetchError(f"{url}: HTTP {e.code} {e.reason}", e.code in (404, 410)) from None
        except urllib.error.URLError as e:
            raise FetchError(f"{url}: {type(e.reason).__name__}: {e.reason}") from None
        except (http.client.HTTPException, OSError, ValueError) as e:
            # BadStatusLine, RemoteDisconnected, IncompleteRead, LineTooLong, timeouts,
            # ConnectionResetError, ssl.SSLError, InvalidURL, bad chunked encoding, ...
            raise FetchError(f"{url}: {type(e).__name__}: {e}") from None

    @contextlib.contextmanager
    def _open_file(self, rel: str):
        root = os.path.realpath(self.location)
        path = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, path]) != root:  # a symlink leading out of the channel
            raise SignatureVerificationError(
                f"file path {rel!r} resolves outside the channel directory"
            )
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
        except FileNotFoundError:
            raise FetchError(f"{path}: no such file", not_found=True) from None
        except OSError as e:
            raise FetchError(f"{path}: {type(e).__name__}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SignatureVerificationError(f"{rel} is not a regular file")
            yield f

    def fetch(self, rel: str, limit: int) -> bytes:
        with self.open(rel) as f:
            data = b"".join(iter_chunks(f, limit))
        if len(data) > limit:
            raise SignatureVerificationError(f"{rel} is larger than {limit} bytes")
        return data


def fetcher_class():
    """python-tuf's ``FetcherInterface`` over :class:`ChannelSource` (tuf imported here, late)."""
    from tuf.api import exceptions
    from tuf.ngclient import FetcherInterface

    class RepositoryFetcher(FetcherInterface):
        """ngclient's downloads through :class:`ChannelSource` (http, https, file URLs and
        directories): paths checked to stay inside the repository, metadata nesting bounded
        before ngclient parses it, every failure a ``DownloadError`` naming its type."""

        def __init__(self, root: str, timeout_s: float):
            self.root = root.rstrip("/") if "://" in root else os.path.abspath(root)
            self.source = ChannelSource(self.root, timeout_s)

        def _relative(self, url: str) -> str:
            prefix = self.root + ("/" if "://" in self.root else os.sep)
            if not url.startswith(prefix):
                raise exceptions.DownloadError(f"{url} is outside the repository")
            return url[len(prefix) :].replace(os.sep, "/")

        def _fetch(self, url: str):
            rel = self._relative(url)
            stack = contextlib.ExitStack()
            try:
                reader = stack.enter_context(self.source.open(rel))
            except FetchError as e:
                stack.close()
                if e.not_found:
                    raise exceptions.DownloadHTTPError(str(e), 404) from None
                raise exceptions.DownloadError(str(e)) from None
            except SignatureVerificationError as e:
                stack.close()
                raise exceptions.DownloadError(str(e)) from None
            return self._chunks(stack, reader, rel)

        @staticmethod
        def _chunks(stack, reader, rel: str):
            with stack:
                try:
                    if not rel.endswith(".json"):
                        yield from iter_chunks(reader, 1 << 40)
                        return
                    data = b"".join(iter_chunks(reader, MAX_METADATA_BYTES))
                except exceptions.DownloadError:
                    raise
                except Exception as e:  # noqa: BLE001 - IncompleteRead, resets, timeouts
                    raise exceptions.DownloadError(f"{rel}: {type(e).__name__}: {e}") from None
                if safe_json.nesting_depth(data) > safe_json.MAX_DEPTH:
                    raise exceptions.DownloadError(
                        f"{rel} nests deeper than {safe_json.MAX_DEPTH} levels"
                    )
                yield data

    return RepositoryFetcher
