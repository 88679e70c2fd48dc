"""What scripts and tests share: evaluation, load testing, the services as subprocesses
(harness), percentiles, the machine's description, benchmark data and studies. Above the client
library and the services (the services never import ris.tools); scripts/ only parse arguments and
call these."""
