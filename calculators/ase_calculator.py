"""placeholder"""
class MolSymCalculator:  # replaced below
    pass
