# Checks of taskmaster's BaseManager listener with Python's own client (and, for `evil`, a raw
# socket), run by tests/system/python_manager_test.cpp. Usage: checks.py CHECK [ARGS]; the
# environment gives TM_HOST, TM_PORT, TM_AUTHKEY as for task_worker.py. Exit 0: the check held.
import hmac, os, pickle, queue, socket, struct, sys
from multiprocessing import AuthenticationError
from multiprocessing.managers import BaseManager

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')

def address():
    return (os.environ.get('TM_HOST', '127.0.0.1'), int(os.environ['TM_PORT']))

def manager(authkey=None):
    m = QueueManager(address=address(), authkey=authkey or os.environ.get('TM_AUTHKEY', 'abc').encode())
    m.connect()
    return m

def wrong_key():
    try:
        manager(b'not the key')
    except AuthenticationError as e:
        print('AuthenticationError: %s' % e)
        return 0
    print('connected with a wrong key')
    return 1

# Puts the values given as Python literals on the command line into task_queue.
def put(*values):
    q = manager().get_task_queue()
    for v in values:
        q.put(eval(v))
    print('put %d values; qsize %d' % (len(values), q.qsize()))
    return 0

# Gets as many values from QUEUE as given and checks each equals (and has the type of) the literal.
def get(name, *values):
    m = manager()
    q = m.get_task_queue() if name == 'task_queue' else m.get_result_queue()
    for v in values:
        want = eval(v)
        got = q.get(timeout=10)
        if got != want or type(got) != type(want):
            print('got %r, expected %r' % (got, want))
            return 1
    try:
        extra = q.get_nowait()
        print('one more value than expected: %r' % (extra,))
        return 1
    except queue.Empty:
        pass
    if not q.empty() or q.qsize() != 0:
        return 1
    print('got the %d values' % len(values))
    return 0

def put_result(text):
    manager().get_result_queue().put(text)
    return 0

# A get with a timeout on an empty queue raises queue.Empty after about that long.
def empty():
    import time
    q = manager().get_result_queue()
    t0 = time.monotonic()
    try:
        q.get(timeout=0.5)
    except queue.Empty:
        took = time.monotonic() - t0
        print('queue.Empty after %.2f s' % took)
        return 0 if 0.4 <= took < 5 else 1
    return 1

def send(s, data):
    s.sendall(struct.pack('!i', len(data)) + data)

def recv(s):
    def exactly(n):
        b = b''
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b
    (n,) = struct.unpack('!i', exactly(4))
    return exactly(n)

# After a correct handshake (3.11 form, by hand), a pickle that calls os.system: refused with a
# #TRACEBACK naming it, and the marker file is not made.
def authenticated():
    """A connection with the handshake done by hand (3.12 form one way, 3.11 the other)."""
    key = os.environ.get('TM_AUTHKEY', 'abc').encode()
    s = socket.create_connection(address())
    challenge = recv(s)
    assert challenge.startswith(b'#CHALLENGE#')
    message = challenge[len(b'#CHALLENGE#'):]
    send(s, b'{sha256}' + hmac.new(key, message, 'sha256').digest())
    assert recv(s) == b'#WELCOME#'
    mine = os.urandom(20)
    send(s, b'#CHALLENGE#' + mine)
    assert recv(s) == hmac.new(key, mine, 'md5').digest()
    send(s, b'#WELCOME#')
    return s

def evil(marker):
    s = authenticated()
    send(s, b'cos\nsystem\n(S"touch ' + marker.encode() + b'"\ntR.')
    kind, text = pickle.loads(recv(s))
    print(kind, text)
    if kind != '#TRACEBACK' or 'os.system' not in text or os.path.exists(marker):
        return 1
    return 0

# Bad input on the network: a length past the bound before the handshake, a negative length, and
# a connection that stops halfway; each is closed by the master (EOF here), which serves on.
def garbage():
    for data in (b'\x7f\xff\xff\xff', b'\xff\xff\xff\xfe', b'\x00\x00\x00\x10abc'):
        s = socket.create_connection(address())
        s.settimeout(20)
        recv(s)  # the challenge
        s.sendall(data)
        if data.endswith(b'abc'):
            s.close()  # cut short: the master must not wait for the rest
            continue
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
    return put('1') or get('task_queue', '1')

# Hostile input from a client that has the authkey: a refused global whose name is cut inside a
# UTF-8 character in the error message, and a burst of "memo bomb" requests (a 256-byte string
# doubled 17 times through the memo: 2**17 copies); then a 4 MiB frame announced during a handshake.
# Each ends in an error or a closed connection; the master serves the others all along.
def hostile():
    s = authenticated()
    send(s, b'\x80\x04c' + b'a' * 79 + 'é'.encode() + b'\nx\n.')
    try:
        kind, text = pickle.loads(recv(s))
        print(kind, text.splitlines()[-1])
    except EOFError:
        print('closed')
    s.close()
    bomb = b'\x80\x04(\x8c\x0atask_queue\x8c\x05qsize'
    bomb += b'B\x00\x01\x00\x00' + b'x' * 256 + b'q\x000'  # 256 bytes in memo 0, popped
    for level in range(17):  # memo level+1 = (memo level, memo level)
        bomb += b'j' + level.to_bytes(4, 'little') + b'j' + level.to_bytes(4, 'little') + b'\x86q' + bytes([level + 1]) + b'0'
    bomb += b'j' + (17).to_bytes(4, 'little') + b'\x85}t.'  # ('task_queue', 'qsize', (BOMB,), {})
    s = authenticated()
    send(s, pickle.dumps((None, 'accept_connection', ('x',), {})))
    recv(s)
    s.sendall(b''.join(struct.pack('!i', len(bomb)) + bomb for _ in range(300)))
    if put('2') or get('task_queue', '2'):
        return 1
    s.close()
    s = socket.create_connection(address())
    recv(s)
    s.sendall(struct.pack('!i', 4 << 20) + b'x' * 65536)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    s.close()
    return put('3') or get('task_queue', '3')

if __name__ == '__main__':
    sys.exit(globals()[sys.argv[1]](*sys.argv[2:]))
