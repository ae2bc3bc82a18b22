#!/bin/sh
# Reclaim disk space on the Docker host: stopped containers, dangling images, unused networks.
# Volumes are NOT pruned on purpose: they hold data.
docker container prune -f
docker image prune -a -f --filter "until=168h"
docker network prune -f
docker builder prune -f --keep-storage 5GB
df -h /var/lib/docker
