# task_worker.py: the example's worker (docs/PYTHON.md), unchanged but for where it connects and
# its authkey (and, for the tests' speed, how many tasks, how long a get waits, the sleep), taken
# from the environment: TM_HOST, TM_PORT, TM_AUTHKEY, TM_TASKS (10), TM_GET_TIMEOUT (1), TM_SLEEP (1).
import os, time, sys, queue
from multiprocessing.managers import BaseManager

# 创建类似的QueueManager:
class QueueManager(BaseManager):
    pass

# 由于这个QueueManager只从网络上获取Queue,所以注册时只提供名字:
QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')

# 连接到服务器,也就是运行task_master.py的机器:
server_addr = os.environ.get('TM_HOST', '127.0.0.1')
print('Connect to server %s...' % server_addr)
# 端口和验证码注意保持与task_master.py设置的完全一致:
m = QueueManager(address=(server_addr, int(os.environ.get('TM_PORT', '5000'))), authkey=os.environ.get('TM_AUTHKEY', 'abc').encode())
# 从网络连接:
m.connect()
# 获取Queue的对象:
task = m.get_task_queue()
result = m.get_result_queue()
# 从task队列取任务,并把结果写入result队列:
for i in range(int(os.environ.get('TM_TASKS', '10'))):
    try:
        n = task.get(timeout=float(os.environ.get('TM_GET_TIMEOUT', '1')))
        print('run task %d * %d...' % (n, n))
        r = '%d * %d = %d' % (n, n, n*n)
        time.sleep(float(os.environ.get('TM_SLEEP', '1')))
        result.put(r)
    except queue.Empty:
        print('task queue is empty.')
# 处理结束:
print('worker exit.')
