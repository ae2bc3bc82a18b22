"""Wake a machine with a Wake-on-LAN magic packet: python3 wol.py a8:a1:59:12:34:56"""
import socket
import sys


def magic_packet(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac}")
    return b"\xff" * 6 + raw * 16


def wake(mac: str, broadcast: str = "10.20.0.255", port: int = 9) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(magic_packet(mac), (broadcast, port))


if __name__ == "__main__":
    wake(sys.argv[1])
