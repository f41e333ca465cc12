def main():
    print("mgtc: bootstrapping")
