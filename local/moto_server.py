"""moto's server as make run runs it (SNS and SQS; Cognito): its banner and access log ("POST /
HTTP/1.1" 200, a line per AWS call) only with VERBOSE=1; its errors always.

    python -m local.moto_server --host 127.0.0.1 --port 5000     (moto.server's arguments)
"""

import sys

from moto.server import main

from local.logs import quiet_stand_ins

if __name__ == "__main__":
    quiet_stand_ins()
    main(sys.argv[1:])
