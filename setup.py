from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name: str) -> list[str]:
    lines = Path(__file__).with_name('requirements').joinpath(name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setup(
    name='detdeploy',
    version='0.1.0',
    description='Config-driven deployment of object detectors to ONNX Runtime and TensorRT, '
    'verified by COCO AP.',
    packages=find_packages(include=['deploy', 'deploy.*']),
    python_requires='>=3.10',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    entry_points={'console_scripts': ['detdeploy=deploy.commands:main']},
)
