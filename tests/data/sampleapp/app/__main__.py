from app import machine

print(f"sampleapp on {machine()}")
