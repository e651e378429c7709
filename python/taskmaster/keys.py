"""The shared key: where it comes from (PROTOCOL.md §9.1, §9.2) and the CURVE keys derived from it (§9.3)."""

import hashlib
import os
import stat

import zmq
from zmq.utils import z85

from .errors import AuthFailed

MIN_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 65536


def _trim(data):
    return data.rstrip(b"\n\r \t")


def _check(data, source):
    key = _trim(data)
    if not key:
        raise AuthFailed(f"{source} is empty; make a key with: taskmaster keygen")
    if len(key) < MIN_KEY_BYTES:
        raise AuthFailed(f"{source} is too short ({len(key)} bytes; at least {MIN_KEY_BYTES} needed); "
                         "make a key with: taskmaster keygen")
    return key


def default_key_path():
    """$XDG_CONFIG_HOME/taskmaster/key, else $HOME/.config/taskmaster/key (§9.2)."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return os.path.join(xdg, "taskmaster", "key")
    home = os.environ.get("HOME")
    if home:
        return os.path.join(home, ".config", "taskmaster", "key")
    return os.path.join(".config", "taskmaster", "key")


def load_key_file(path):
    """The shared key in `path`, with the checks of the CLI: a regular file, mode & 077 == 0, at most
    64 KiB, at least 32 bytes after trimming. Raises AuthFailed."""
    source = f"key file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise AuthFailed(f"cannot read {source}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuthFailed(f"{source} is not a regular file")
        if st.st_mode & 0o077:
            raise AuthFailed(f"{source} is accessible by group or others (mode {st.st_mode & 0o7777:04o}); "
                             f"refusing it. Fix with: chmod 600 {path}")
        data = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except InterruptedError:
                continue
            except OSError as e:
                raise AuthFailed(f"cannot read {source}: {e.strerror}") from None
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_KEY_FILE_BYTES:
                raise AuthFailed(f"{source} is larger than 64 KiB; is it really a key?")
    finally:
        os.close(fd)
    return _check(data, source)


def find_key(key_file=None):
    """The shared key as the CLI finds it (§9.2): `key_file`, else $TASKMASTER_KEY_FILE, else the key in
    $TASKMASTER_KEY, else the default file. A source that is present but unusable raises AuthFailed;
    none at all raises AuthFailed("no key: ...")."""
    if key_file:
        return load_key_file(os.fspath(key_file))
    env_file = os.environ.get("TASKMASTER_KEY_FILE")
    if env_file:
        return load_key_file(env_file)
    if "TASKMASTER_KEY" in os.environ:
        return _check(os.fsencode(os.environ["TASKMASTER_KEY"]), "TASKMASTER_KEY")
    path = default_key_path()
    if not os.path.exists(path):
        raise AuthFailed(f"no key: make one with 'taskmaster keygen' (it goes to {path}), "
                         "or give one with key_file=, TASKMASTER_KEY_FILE or TASKMASTER_KEY")
    return load_key_file(path)


def derive_keys(shared_key):
    """The CURVE keys of §9.3: (server_public, server_secret, client_public, client_secret), 32 raw bytes
    each. `shared_key` is the trimmed key (bytes)."""
    if isinstance(shared_key, str):
        shared_key = shared_key.encode()
    root = hashlib.blake2b(shared_key, digest_size=32, salt=bytes(16),
                           person=b"taskmaster-key" + bytes(2)).digest()
    out = []
    for subkey_id in (1, 2):  # 1: the server's pair, 2: the clients'
        seed = hashlib.blake2b(b"", digest_size=32, key=root, salt=subkey_id.to_bytes(8, "little") + bytes(8),
                               person=b"tmcurve1" + bytes(8)).digest()
        secret = hashlib.sha512(seed).digest()[:32]
        public = z85.decode(zmq.curve_public(z85.encode(secret)))
        out += [public, secret]
    return tuple(out)


def derive_keys_z85(shared_key):
    """derive_keys, each key in Z85 (40 ASCII characters, as bytes)."""
    return tuple(z85.encode(k) for k in derive_keys(shared_key))
