"""An IPMI 2.0 BMC for tests, built on pyghmi's BMC server.

Binds 127.0.0.1 only (pyghmi's own `fakebmc` binds every interface), keeps
power state, and stores the raw boot-flags parameter so that `ipmitool
chassis bootparam get 5` shows exactly what a client wrote, including the
persistent and EFI bits that pyghmi's stock server drops.

Usage: python ipmi_sim.py PORT USER PASSWORD
"""

import sys

import pyghmi.ipmi.bmc as bmc


class TestBmc(bmc.Bmc):
    def __init__(self, authdata, port):
        super().__init__(authdata, port=port, address='127.0.0.1')
        self.powerstate = 'off'
        self.boot_flags = [0x00, 0x00, 0x00, 0x00, 0x00]

    def get_power_state(self):
        return self.powerstate

    def power_on(self):
        self.powerstate = 'on'

    def power_off(self):
        self.powerstate = 'off'

    def power_shutdown(self):
        self.powerstate = 'off'

    def power_cycle(self):
        self.powerstate = 'on'

    def power_reset(self):
        self.powerstate = 'on'

    def is_active(self):
        return self.powerstate == 'on'

    def get_system_boot_options(self, request, session):
        if request['data'][0] != 5:
            return session.send_ipmi_response(code=0x80)
        return session.send_ipmi_response(data=[1, 5] + self.boot_flags)

    def set_system_boot_options(self, request, session):
        data = list(request['data'])
        if data[0] == 5:
            self.boot_flags = (data[1:6] + [0] * 5)[:5]
        session.send_ipmi_response()


def main():
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = TestBmc({user: password}, port)
    print('listening', flush=True)
    server.listen()


if __name__ == '__main__':
    sys.exit(main())
