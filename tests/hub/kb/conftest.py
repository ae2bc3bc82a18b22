import pytest

from hub.store import open_db


@pytest.fixture
def kbdb(tmp_path):
    db = open_db(tmp_path / "kb.db")
    yield db
    db.close()
