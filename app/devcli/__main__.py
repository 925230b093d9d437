from app.devcli import run

run()
