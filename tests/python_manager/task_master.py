# task_master.py, as a client of a taskmaster master: the example's master script serves the
# queues itself (BaseManager.start); against taskmaster it connect()s instead, puts the tasks and
# reads the results as the example does. Exits 0 if every result is right, 1 otherwise.
# Environment: TM_HOST, TM_PORT, TM_AUTHKEY, TM_TASKS (10), TM_RESULT_TIMEOUT (5).
import os, random, sys, queue
from multiprocessing.managers import BaseManager

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')
manager = QueueManager(address=(os.environ.get('TM_HOST', '127.0.0.1'), int(os.environ.get('TM_PORT', '5000'))),
                       authkey=os.environ.get('TM_AUTHKEY', 'abc').encode())
manager.connect()
task = manager.get_task_queue()
result = manager.get_result_queue()
count = int(os.environ.get('TM_TASKS', '10'))
sent = []
for i in range(count):
    n = random.randint(0, 10000)
    print('Put task %d...' % n)
    task.put(n)
    sent.append(n)
print('Try get results...')
expected = sorted('%d * %d = %d' % (n, n, n * n) for n in sent)
got = []
for i in range(count):
    try:
        r = result.get(timeout=float(os.environ.get('TM_RESULT_TIMEOUT', '5')))
        print('Result: %s' % r)
        got.append(r)
    except queue.Empty:
        print('result queue is empty.')
ok = sorted(got) == expected
print('master exit: %s' % ('all %d results right' % count if ok else 'WRONG: expected %r, got %r' % (expected, sorted(got))))
sys.exit(0 if ok else 1)
