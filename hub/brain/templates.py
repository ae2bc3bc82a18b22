"""The library of parameterised questions ``homelab-hub ask`` can answer.

Each template is one documented SELECT with named parameters. ``words`` are what a person
might say when they mean it (the retriever matches questions against title + doc + words).
Parameters: node, unit, package, path, user, text (strings, optional unless required),
since (a duration back from now, turned into a Unix time), limit (an int).
docs/brain.md lists them all; a test checks that it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Template:
    id: str
    title: str
    doc: str
    words: str
    sql: str
    params: dict[str, str] = field(default_factory=dict)  # name -> default ("" = optional, "!" = required)
    since: str = "7d"  # default look-back when the template takes :since


NODE = "(:node IS NULL OR node = :node)"

TEMPLATES: list[Template] = [
    Template("disk_closest_full", "Disks closest to full",
             "Mounts by used space, fullest first (latest sample).",
             "disk full space storage filesystem mount running out free capacity closest almost full df",
             "SELECT node, substr(labels, 8, length(labels) - 8) AS mount, round(100 * value, 1) AS used_percent,"
             " time FROM metrics_latest WHERE name = 'disk_used_ratio' AND " + NODE +
             " ORDER BY value DESC LIMIT :limit", {"node": "", "limit": "10"}),
    Template("disk_growth", "Disks filling fastest",
             "Change in used space per mount over a period, from hourly aggregates, fastest growing first.",
             "disk growing filling fastest trend growth increase rate trending full soon",
             "SELECT s.node, substr(s.labels, 8, length(s.labels) - 8) AS mount,"
             " round(100 * (max(p.avg) - min(p.avg)), 2) AS growth_points,"
             " round(100 * max(p.avg), 1) AS used_percent_max"
             " FROM samples_1h p JOIN series s ON s.id = p.series"
             " WHERE s.name = 'disk_used_ratio' AND p.ts >= :since AND (:node IS NULL OR s.node = :node)"
             " GROUP BY s.id ORDER BY growth_points DESC LIMIT :limit", {"node": "", "since": "", "limit": "10"}),
    Template("memory_usage", "Memory use",
             "Memory (and swap) used per node, highest first.",
             "memory ram used usage using swap swapping out of memory oom most memory too much",
             "SELECT node, round(100 * value, 1) AS memory_used_percent, time FROM metrics_latest"
             " WHERE name = 'memory_used_ratio' AND " + NODE + " ORDER BY value DESC LIMIT :limit",
             {"node": "", "limit": "10"}),
    Template("load_average", "Load average",
             "1-minute load average per node, busiest first.",
             "load average busy loaded load1 overloaded",
             "SELECT node, round(value, 2) AS load1, time FROM metrics_latest WHERE name = 'load1' AND " + NODE +
             " ORDER BY value DESC LIMIT :limit", {"node": "", "limit": "10"}),
    Template("cpu_usage", "CPU use",
             "CPU busy percent per node, highest first.",
             "cpu usage processor utilisation utilization percent hot busiest",
             "SELECT node, round(value, 1) AS cpu_percent, time FROM metrics_latest WHERE name = 'cpu_percent' AND " + NODE +
             " ORDER BY value DESC LIMIT :limit", {"node": "", "limit": "10"}),
    Template("temperature", "Temperatures",
             "Latest sensor temperatures, hottest first.",
             "temperature hot heat sensors celsius thermal overheating",
             "SELECT node, labels AS sensor, value AS celsius, time FROM metrics_latest"
             " WHERE name = 'temperature_celsius' AND " + NODE + " ORDER BY value DESC LIMIT :limit",
             {"node": "", "limit": "10"}),
    Template("network_traffic", "Network traffic",
             "Bytes per second received and sent per interface, busiest first.",
             "network traffic bandwidth throughput receive transmit bytes interface busiest link",
             "SELECT node, name, labels AS interface, round(value) AS bytes_per_second, time FROM metrics_latest"
             " WHERE name IN ('net_receive_bytes_per_second', 'net_transmit_bytes_per_second') AND " + NODE +
             " ORDER BY value DESC LIMIT :limit", {"node": "", "limit": "10"}),
    Template("failed_units", "Failed units",
             "systemd units that are in the failed state now.",
             "broke failed units services systemd crashed broken down failing dead not running",
             "SELECT node, unit, sub, result, restarts, datetime(changed, 'unixepoch') AS since FROM services"
             " WHERE active = 'failed' AND " + NODE + " ORDER BY changed DESC LIMIT :limit",
             {"node": "", "limit": "50"}),
    Template("service_history", "A unit's history",
             "State changes of one systemd unit (restarts, failures), newest first.",
             "service unit history restarts flapping state changes restarted crashloop when did stop start",
             "SELECT node, datetime(ts, 'unixepoch') AS time, unit, previous, active, result, restarts"
             " FROM service_changes WHERE unit = :unit AND ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"unit": "!", "node": "", "since": "", "limit": "50"}, "30d"),
    Template("changes_since", "What changed",
             "Everything that changed on a node (packages, files, services, devices) since a time.",
             "what changed changes happened modified since difference recently different timeline",
             "SELECT node, time, kind, subject, action, detail FROM changes WHERE ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "since": "", "limit": "100"}, "24h"),
    Template("package_changes", "Package changes",
             "Packages installed, upgraded or removed since a time.",
             "package packages installed upgraded removed new software apt dpkg updated versions",
             "SELECT node, datetime(ts, 'unixepoch') AS time, action, name, old_version, version FROM package_changes"
             " WHERE ts >= :since AND " + NODE + " AND (:package IS NULL OR name = :package)"
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "package": "", "since": "", "limit": "100"}),
    Template("who_installed", "Who installed what",
             "Install commands people ran (apt, dpkg, pip, snap, npm ...), with the user, newest first.",
             "who installed user person ran install installing apt-get pip added software by whom",
             "SELECT node, datetime(ts, 'unixepoch') AS time, json_extract(data, '$.user') AS user,"
             " json_extract(data, '$.command') AS command FROM events WHERE kind = 'command' AND ts >= :since"
             " AND " + NODE + " AND (json_extract(data, '$.command') LIKE '%install%'"
             " OR json_extract(data, '$.command') LIKE 'dpkg -i%')"
             " AND (:package IS NULL OR json_extract(data, '$.command') LIKE '%' || :package || '%')"
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "package": "", "since": "", "limit": "50"}, "30d"),
    Template("package_where", "Where a package is installed",
             "Which nodes have a package installed, and which version.",
             "which nodes hosts have has package version of installed where is run running what version",
             "SELECT node, name, version, arch, manager, manual FROM packages WHERE state = 'installed'"
             " AND name = :package AND " + NODE + " ORDER BY node LIMIT :limit",
             {"package": "!", "node": "", "limit": "100"}),
    Template("commands_path", "Commands that touched a path",
             "Shell commands whose text mentions a path, newest first.",
             "who edited edit vim nano vi sed tee by hand commands touched path file directory ran on edited deleted chmod who touched",
             "SELECT node, datetime(ts, 'unixepoch') AS time, json_extract(data, '$.user') AS user,"
             " json_extract(data, '$.cwd') AS cwd, json_extract(data, '$.command') AS command FROM events"
             " WHERE kind = 'command' AND ts >= :since AND " + NODE +
             " AND instr(json_extract(data, '$.command'), :path) > 0 ORDER BY ts DESC LIMIT :limit",
             {"path": "!", "node": "", "since": "", "limit": "50"}, "30d"),
    Template("commands_user", "Commands run",
             "Shell commands one user ran, newest first.",
             "commands run by user typed shell history what did do executed",
             "SELECT node, datetime(ts, 'unixepoch') AS time, json_extract(data, '$.cwd') AS cwd,"
             " json_extract(data, '$.command') AS command, json_extract(data, '$.exit_code') AS exit_code"
             " FROM events WHERE kind = 'command' AND json_extract(data, '$.user') = :user AND ts >= :since"
             " AND " + NODE + " ORDER BY ts DESC LIMIT :limit",
             {"user": "!", "node": "", "since": "", "limit": "50"}, "7d"),
    Template("failed_commands", "Failed commands",
             "Shell commands that exited non-zero, newest first.",
             "failed commands errors exit code nonzero unsuccessful",
             "SELECT node, datetime(ts, 'unixepoch') AS time, json_extract(data, '$.user') AS user,"
             " json_extract(data, '$.command') AS command, json_extract(data, '$.exit_code') AS exit_code"
             " FROM events WHERE kind = 'command' AND json_extract(data, '$.exit_code') != 0 AND ts >= :since"
             " AND " + NODE + " ORDER BY ts DESC LIMIT :limit", {"node": "", "since": "", "limit": "50"}, "24h"),
    Template("devices_plugged", "Devices plugged in",
             "Devices that appeared (USB sticks, disks, network adapters) since a time.",
             "devices plugged usb inserted connected hardware attached stick drive new device",
             "SELECT node, datetime(ts, 'unixepoch') AS time, subsystem, dev_node, vendor, model, serial"
             " FROM device_changes WHERE action = 'add' AND ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "since": "", "limit": "50"}),
    Template("nodes_offline", "Offline nodes",
             "Nodes not heard from recently (silent for longer than the offline threshold, 3 minutes).",
             "anything offline unreachable dark alive up responding reachable ping offline down unreachable not reporting stopped reporting went silent dead missing nodes machines hosts lost contact gone quiet",
             "SELECT name AS node, datetime(last_seen, 'unixepoch') AS last_seen,"
             " round((strftime('%s', 'now') - last_seen) / 60.0, 1) AS minutes_silent FROM nodes"
             " WHERE last_seen IS NULL OR last_seen < strftime('%s', 'now') - 180 ORDER BY last_seen LIMIT :limit",
             {"limit": "100"}),
    Template("nodes_status", "Nodes",
             "Every node, when it was last seen and its clock skew.",
             "nodes fleet list machines hosts status last seen enrolled all computers",
             "SELECT name AS node, datetime(last_seen, 'unixepoch') AS last_seen, last_seq AS events_sent,"
             " round(clock_skew, 2) AS clock_skew_s, address FROM nodes ORDER BY name LIMIT :limit",
             {"limit": "100"}),
    Template("alerts_recent", "Alerts",
             "Alerts that started since a time (default this week), newest first.",
             "alerts fired warnings incidents alarms problems triggered raised",
             "SELECT id, node, rule, severity, state, summary, datetime(first_seen, 'unixepoch') AS started"
             " FROM alerts WHERE first_seen >= :since AND " + NODE + " ORDER BY first_seen DESC LIMIT :limit",
             {"node": "", "since": "", "limit": "100"}),
    Template("alerts_open", "Open alerts",
             "Alerts pending or firing right now.",
             "alerting open active firing now current ongoing unresolved alerts right now",
             "SELECT id, node, rule, severity, state, summary, datetime(first_seen, 'unixepoch') AS started"
             " FROM alerts WHERE state != 'resolved' AND " + NODE + " ORDER BY first_seen DESC LIMIT :limit",
             {"node": "", "limit": "100"}),
    Template("file_changes", "File changes",
             "Changes to watched files (under a path, if given), newest first.",
             "edits edited anyone configs files file modified config configuration edited etc written watched contents",
             "SELECT node, datetime(ts, 'unixepoch') AS time, action, path, size FROM file_changes"
             " WHERE ts >= :since AND " + NODE + " AND (:path IS NULL OR path = :path OR path LIKE :path || '/%')"
             " ORDER BY ts DESC LIMIT :limit", {"path": "", "node": "", "since": "", "limit": "100"}, "24h"),
    Template("log_errors", "Error logs",
             "Log lines at error severity or worse (syslog 0-3), newest first.",
             "errors logs error messages syslog journal critical severe log errors",
             "SELECT node, datetime(ts, 'unixepoch') AS time, program, message FROM logs"
             " WHERE severity <= 3 AND ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "since": "", "limit": "50"}, "24h"),
    Template("log_search", "Logs mentioning a text",
             "Log lines containing a text (quote it in the question), newest first.",
             "logs mentioning containing search grep lines with text message said",
             "SELECT node, datetime(ts, 'unixepoch') AS time, program, message FROM logs"
             " WHERE instr(message, :text) > 0 AND ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"text": "!", "node": "", "since": "", "limit": "50"}),
    Template("ssh_logins", "SSH logins",
             "Successful SSH logins (sshd 'Accepted ...' lines), newest first.",
             "ssh logins logged in login accepted authentication sshd who logged remote access",
             "SELECT node, datetime(ts, 'unixepoch') AS time, message"
             " FROM logs WHERE program = 'sshd' AND message LIKE 'Accepted %' AND ts >= :since AND " + NODE +
             " ORDER BY ts DESC LIMIT :limit", {"node": "", "since": "", "limit": "50"}),
    Template("pending_updates", "Pending updates",
             "Package updates waiting per node, with how many are security updates.",
             "pending updates upgrades security patches outdated available upgradable need updating",
             "SELECT node, count(*) AS pending, sum(security) AS security FROM pending_updates WHERE " + NODE +
             " GROUP BY node ORDER BY security DESC, pending DESC LIMIT :limit", {"node": "", "limit": "100"}),
    Template("top_processes", "Top processes",
             "The heaviest processes (latest sample), by CPU then memory.",
             "processes top memory hog hogging using most cpu programs running process eating resources",
             "SELECT node, pid, name, user, round(cpu_percent, 1) AS cpu_percent, rss_bytes / 1048576 AS rss_mib"
             " FROM processes WHERE " + NODE + " ORDER BY cpu_percent DESC, rss_bytes DESC LIMIT :limit",
             {"node": "", "limit": "15"}),
    Template("kernel_versions", "Kernels and OS",
             "Operating system and kernel per node.",
             "kernel version os operating system release distro debian ubuntu running kernel",
             "SELECT node, os, kernel, arch FROM inventory WHERE " + NODE + " ORDER BY node LIMIT :limit",
             {"node": "", "limit": "100"}),
    Template("hardware", "Hardware",
             "CPU model, core count, memory and swap per node.",
             "hardware cpu model cores memory size ram installed specs how much memory",
             "SELECT node, cpu_model, cpu_count, round(memory_bytes / 1073741824.0, 1) AS memory_gib,"
             " round(swap_bytes / 1073741824.0, 1) AS swap_gib FROM inventory WHERE " + NODE +
             " ORDER BY node LIMIT :limit", {"node": "", "limit": "100"}),
    Template("ip_addresses", "IP addresses",
             "Network interfaces and their addresses per node.",
             "ip address addresses interfaces network nic mac tailscale",
             "SELECT node, name AS interface, addresses, mac, up FROM interfaces WHERE " + NODE +
             " ORDER BY node, name LIMIT :limit", {"node": "", "limit": "100"}),
    Template("uptime", "Uptime",
             "When each node last booted, longest running first.",
             "uptime boot rebooted last reboot booted since running restart machine",
             "SELECT node, datetime(boot_time, 'unixepoch') AS booted,"
             " round((strftime('%s', 'now') - boot_time) / 86400.0, 1) AS days_up FROM inventory WHERE " + NODE +
             " ORDER BY boot_time LIMIT :limit", {"node": "", "limit": "100"}),
    Template("jobs_recent", "Playbook runs",
             "Playbook jobs sent to nodes and how they ended, newest first.",
             "jobs playbook runs fixes executed ran remediation results ran playbooks",
             "SELECT node, playbook, mode, state, exit_code, datetime(created, 'unixepoch') AS created"
             " FROM jobs WHERE created >= :since AND " + NODE + " ORDER BY created DESC LIMIT :limit",
             {"node": "", "since": "", "limit": "50"}),
    Template("proposals_waiting", "Proposals awaiting approval",
             "Fixes proposed and waiting for a person to approve or reject them.",
             "proposals pending approval approve waiting suggested fixes review",
             "SELECT id, node, rule, playbook, risk, params, datetime(created, 'unixepoch') AS created"
             " FROM proposals WHERE state = 'proposed' AND " + NODE + " ORDER BY created DESC LIMIT :limit",
             {"node": "", "limit": "50"}),
    Template("brain_decisions", "Brain decisions",
             "What the model decided recently and whether its answers were accepted.",
             "brain decisions model ai llm decided chose accepted rejected fallback",
             "SELECT id, datetime(ts, 'unixepoch') AS time, purpose, alert_id, node, outcome, latency_ms"
             " FROM brain_decisions WHERE ts >= :since AND " + NODE + " ORDER BY ts DESC LIMIT :limit",
             {"node": "", "since": "", "limit": "50"}),
    Template("event_volume", "Event volume",
             "Events stored per node and kind since a time, most first.",
             "events volume noisy count how many events chatty sends most kinds",
             "SELECT node, kind, count(*) AS events FROM events WHERE ts >= :since AND " + NODE +
             " GROUP BY node, kind ORDER BY events DESC LIMIT :limit", {"node": "", "since": "", "limit": "50"}, "24h"),
    Template("manual_packages", "Manually installed packages",
             "Packages someone installed on purpose (not as dependencies), per node.",
             "manually installed packages explicit chosen not dependencies user installed list",
             "SELECT node, name, version FROM packages WHERE state = 'installed' AND manual = 1 AND " + NODE +
             " ORDER BY node, name LIMIT :limit", {"node": "", "limit": "200"}),
]

BY_ID = {t.id: t for t in TEMPLATES}
