"""The jobs: one module per ``python -m`` entry. Nothing imports these modules.

A process started as a job (not a test importing one) is seated among the fetoolkit jobs running
on the machine before any job module loads torch (``fetoolkit.sharing.share_cores``).
"""

from fetoolkit.sharing import running_as_job, share_cores

if running_as_job():
    share_cores()
